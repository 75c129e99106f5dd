//! Servers the gateway starts itself (`command`): the official Python SDK server run by the
//! real gateway, in a cgroup the gateway makes below its own (itself inside a test cgroup),
//! with its egress rules, its own environment, no_new_privs, restarted when it dies and
//! stopped with the gateway.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use mcp_gateway_tests::{
    cgroup::TestCgroup,
    e2e::{Sdk, TempDir, Transport, assets, free_port, python, run_client_with},
    pins::PinDir,
    process::{ChildGuard, clean_gateway_env, gateway_bin, gateway_output, in_cgroup},
    prometheus::{parse, scrape, value, wait_listening},
    require_privileges,
    upstream::http_responder,
    wait_until,
};

/// The real gateway on `config`, run inside `cgroup` (so the servers' cgroups are made below
/// it and removed with it), with its state directory in `state`.
struct Supervisor {
    child: ChildGuard,
    metrics: std::net::SocketAddr,
    _dir: TempDir,
}

impl Supervisor {
    fn start(config: &str, cgroup: &TestCgroup, pins: &PinDir, state: &Path) -> Self {
        let dir = TempDir::new("supervise");
        let path = dir.path().join("gateway.toml");
        fs::write(&path, config).unwrap();
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = in_cgroup(Some(cgroup.path()), &gateway_bin());
        clean_gateway_env(&mut cmd)
            .env("RUST_LOG", "info")
            .env("STATE_DIRECTORY", state)
            .env("RUNTIME_DIRECTORY", state)
            // Never to be seen by a supervised server.
            .env("MCP_GATEWAY_TEST_SECRET", "the-gateways-own-secret")
            .arg("run")
            .arg("--config")
            .arg(&path)
            .args(["--ebpf", "required", "--cgroup"])
            .arg(cgroup.path())
            .args([
                "--pin-dir",
                pins.arg(),
                "--metrics-listen",
                &metrics.to_string(),
            ]);
        let mut child = ChildGuard::spawn_logged(&mut cmd);
        child.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
        wait_listening(metrics, Duration::from_secs(10));
        Self {
            child,
            metrics,
            _dir: dir,
        }
    }

    /// `mcp-gateway status` (`--json` when `json`), finding the state where the gateway
    /// wrote it.
    fn status(pins: &PinDir, state: &Path, json: bool) -> String {
        let mut cmd = std::process::Command::new(gateway_bin());
        clean_gateway_env(&mut cmd)
            .env("RUNTIME_DIRECTORY", state)
            .args(["status", "--pin-dir", pins.arg()]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("running mcp-gateway status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn metric(&self, name: &str, server: &str) -> f64 {
        value(&parse(&scrape(self.metrics)), name, &[("server", server)])
    }
}

/// The pid of the process whose command line contains `needle`, if one runs.
fn pid_of(needle: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains(needle).then_some(pid)
    })
}

fn server_cgroup(pid: u32) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    mcp_gateway_tests::cgroup::cgroup2_mount()
        .unwrap()
        .join(rel.trim_start_matches('/'))
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn a_supervised_sdk_server_is_confined_served_restarted_and_stopped() {
    require_privileges();
    let cgroup = TestCgroup::new("supervise");
    let pins = PinDir::new("supervise");
    let state = TempDir::new("supervise-state");
    let allowed = http_responder("the allowed service");
    let denied = http_responder("a service the server must not reach");
    let (listen, upstream) = (free_port(), free_port());
    let record = state.path().join("record.jsonl");
    let marker = format!("--port {upstream} ");
    let config = format!(
        r#"
        [[server]]
        name = "fetch"
        listen = "127.0.0.1:{listen}"
        upstream = "http://127.0.0.1:{upstream}/mcp"
        command = ["{python}", "{script}", "--port", "{upstream}", "--record", "{record}", "--fetch"]
        env = {{ GREETING = "hello" }}
        egress = ["127.0.0.1:{allowed}"]
        read_paths = ["{assets}"]
        write_paths = ["{state}"]
        "#,
        python = python().display(),
        script = assets().join("server.py").display(),
        record = record.display(),
        assets = assets().display(),
        state = state.path().display(),
    );
    // A file the server has no business reading: outside its read paths.
    let secrets = TempDir::new("supervise-secret");
    let secret = secrets.path().join("secret.txt");
    fs::write(&secret, "the host's secret").unwrap();
    let gw = Supervisor::start(&config, &cgroup, &pins, state.path());
    let url = format!("http://127.0.0.1:{listen}/mcp");
    wait_until("the server is ready", Duration::from_secs(30), || {
        mcp_gateway_tests::e2e::raw_initialize(listen, &format!("127.0.0.1:{listen}")) == 200
    });

    // Its own cgroup below the gateway's, its own environment, no way to gain privileges.
    let pid = pid_of(&marker).expect("the server runs");
    let own = server_cgroup(pid);
    assert!(own.starts_with(cgroup.path()), "{}", own.display());
    assert!(
        own.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("mcp-server-fetch-")
    );
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&environ)
        .split('\0')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["GREETING", "HOME", "LANG", "PATH"],
        "and nothing of the gateway's"
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            status.contains(&format!("{set}:\t0000000000000000")),
            "{set}: every capability dropped, though the gateway runs as root: {status}"
        );
    }

    // Served through the gateway, with its egress rules in force on its own cgroup.
    let summary = run_client_with(
        Sdk::Python,
        &url,
        Transport::Streamable,
        &[
            "--fetch",
            &format!("http://127.0.0.1:{allowed}/"),
            "--fetch",
            &format!("http://127.0.0.1:{denied}/"),
            "--fetch",
            &format!("file://{}", assets().join("requirements.txt").display()),
            "--fetch",
            &format!("file://{}", secret.display()),
        ],
    );
    assert_eq!(summary["add"], serde_json::json!(["5"]), "{summary}");
    assert_eq!(summary["fetch"][0]["text"][0], "the allowed service");
    assert!(
        summary["fetch"][1]["text"]
            .to_string()
            .contains("Operation not permitted"),
        "{summary}"
    );
    // Its file system sandbox: what it may read, and not the rest.
    assert_eq!(summary["fetch"][2]["is_error"], false, "{summary}");
    assert_eq!(summary["fetch"][3]["is_error"], true, "{summary}");
    let refused = summary["fetch"][3]["text"].to_string();
    assert!(
        refused.contains("Permission denied") && !refused.contains("the host's secret"),
        "{summary}"
    );
    assert_eq!(gw.metric("mcp_gateway_sandbox_enforcing", "fetch"), 1.0);
    assert_eq!(gw.metric("mcp_gateway_egress_enforcing", "fetch"), 1.0);
    assert_eq!(gw.metric("mcp_gateway_server_up", "fetch"), 1.0);
    assert_eq!(gw.metric("mcp_gateway_server_restarts_total", "fetch"), 0.0);

    // `status` shows it: pid, cgroup, sandbox, no restart yet.
    let report: serde_json::Value =
        serde_json::from_str(&Supervisor::status(&pins, state.path(), true)).unwrap();
    let mine = &report["supervised"][0];
    assert_eq!(mine["server"], "fetch", "{report}");
    assert_eq!(mine["pid"], pid, "{report}");
    assert_eq!(mine["restarts"], 0);
    assert_eq!(mine["sandbox"], true);
    assert_eq!(mine["cgroup"], own.to_str().unwrap());
    assert!(mine["up_since_unix"].as_u64().unwrap() > 0);

    // Killed: started again (after the backoff), and served again.
    assert!(mcp_gateway_tests::process::signal_pid(pid, libc::SIGKILL));
    wait_until("started again", Duration::from_secs(20), || {
        pid_of(&marker).is_some_and(|p| p != pid)
            && gw.metric("mcp_gateway_server_restarts_total", "fetch") == 1.0
    });
    wait_until("ready again", Duration::from_secs(30), || {
        mcp_gateway_tests::e2e::raw_initialize(listen, &format!("127.0.0.1:{listen}")) == 200
    });
    assert_eq!(gw.metric("mcp_gateway_server_up", "fetch"), 1.0);
    let text = Supervisor::status(&pins, state.path(), false);
    assert!(
        text.contains("supervised server fetch")
            && text.contains("running, pid")
            && text.contains("restarts 1, last exit: signal: 9 (SIGKILL)")
            && text.contains("file system sandbox in force"),
        "{text}"
    );

    // Stopped with the gateway, its cgroup removed.
    let mut gw = gw;
    gw.child.signal(libc::SIGTERM);
    assert!(gw.child.wait_exit(Duration::from_secs(30)).is_some());
    assert!(pid_of(&marker).is_none(), "the server outlived the gateway");
    assert!(!own.exists(), "its cgroup was left behind");
    assert!(
        !Supervisor::status(&pins, state.path(), false).contains("supervised server"),
        "its state went with it"
    );
}

/// A server that never listens: requests get 503 with Retry-After until it does; one that
/// exits with `restart = "never"` stays down and says so.
#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn a_server_not_yet_listening_gets_503_and_one_that_exits_stays_down_by_its_policy() {
    require_privileges();
    let cgroup = TestCgroup::new("supervise-503");
    let pins = PinDir::new("supervise-503");
    let state = TempDir::new("supervise-503-state");
    let (slow_listen, down_listen) = (free_port(), free_port());
    let config = format!(
        r#"
        [[server]]
        name = "slow"
        listen = "127.0.0.1:{slow_listen}"
        upstream = "http://127.0.0.1:{}/mcp"
        command = ["sleep", "60"]

        [[server]]
        name = "down"
        listen = "127.0.0.1:{down_listen}"
        upstream = "http://127.0.0.1:{}/mcp"
        command = ["sh", "-c", "echo going away >&2; exit 3"]
        restart = "never"

        [[server]]
        name = "nobody"
        listen = "127.0.0.1:{}"
        upstream = "http://127.0.0.1:{}/mcp"
        command = ["sh", "-c", "echo uid=$(id -u) gid=$(id -g); exec sleep 60"]
        user = "nobody"
        pids_max = 16
        memory_max = "64M"
        "#,
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut gw = Supervisor::start(&config, &cgroup, &pins, state.path());
    let answer = raw_post(slow_listen);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    wait_until("`slow` runs", Duration::from_secs(10), || {
        gw.metric("mcp_gateway_server_up", "slow") == 1.0
    });
    assert!(
        raw_post(slow_listen).starts_with("HTTP/1.1 503"),
        "running, not listening"
    );
    // Read already while the gateway started, or still to come.
    let line = seen(&mut gw.child, "not started again");
    // Its own output, tagged with its name.
    assert!(seen(&mut gw.child, "going away").contains("server=down"));
    assert!(
        line.contains("server=down") && line.contains("exit status: 3"),
        "{line}"
    );
    assert_eq!(gw.metric("mcp_gateway_server_up", "down"), 0.0);
    assert_eq!(gw.metric("mcp_gateway_server_restarts_total", "down"), 0.0);
    assert!(raw_post(down_listen).starts_with("HTTP/1.1 503"));
    let text = Supervisor::status(&pins, state.path(), false);
    assert!(
        text.contains("supervised server down (instance")
            && text.contains("DOWN; restarts 0, last exit: exit status: 3"),
        "{text}"
    );

    // `user`: it runs as that user (and its primary group), its output says so.
    let nobody = seen(&mut gw.child, "uid=");
    assert!(
        nobody.contains("server=nobody") && nobody.contains("uid=65534 gid=65534"),
        "{nobody}"
    );
    let pid = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            (cmd == b"sleep\x0060\x00" && server_cgroup(pid).starts_with(cgroup.path()))
                .then_some(pid)
        })
        .expect("its sleep runs in its cgroup");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Uid:\t65534\t65534\t65534"), "{status}");

    // Its limits: in force where this host's cgroup v2 has the controller, else said loudly.
    let own = server_cgroup(pid);
    let controllers = fs::read_to_string(cgroup.path().join("cgroup.controllers")).unwrap();
    for (key, controller, file, value) in [
        ("pids_max", "pids", "pids.max", "16"),
        ("memory_max", "memory", "memory.max", "67108864"),
    ] {
        let enforcing = value_of(&gw, "mcp_gateway_server_limit_enforcing", "nobody", key);
        if controllers.split_whitespace().any(|c| c == controller) {
            assert_eq!(enforcing, 1.0, "{key}");
            assert_eq!(fs::read_to_string(own.join(file)).unwrap().trim(), value);
        } else {
            assert_eq!(enforcing, 0.0, "{key}: not enforced, and said so");
            let line = seen(&mut gw.child, &format!("limit=\"{key}\""));
            assert!(
                line.contains("LIMIT NOT ENFORCED")
                    && line.contains(&format!("the {controller} controller is not in cgroup v2")),
                "{line}"
            );
            eprintln!(
                "{key}: the {controller} controller is not in cgroup v2 here: only the not-enforced path was tested"
            );
        }
    }
}

fn value_of(gw: &Supervisor, name: &str, server: &str, limit: &str) -> f64 {
    value(
        &parse(&scrape(gw.metrics)),
        name,
        &[("server", server), ("limit", limit)],
    )
}

/// A log line with `needle`: read already (while the gateway started), or still to come.
fn seen(child: &mut ChildGuard, needle: &str) -> String {
    if let Some(line) = child.logged(needle) {
        return line.to_owned();
    }
    child.wait_for_log(needle, Duration::from_secs(10))
}

/// One MCP initialize POST; the whole answer head.
fn raw_post(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Bad `command` tables are start-up errors naming the server and the key.
#[test]
fn bad_supervised_servers_are_refused_with_the_reason() {
    let dir = TempDir::new("supervise-bad");
    for (table, needle) in [
        (
            r#"command = ["no-such-program-mcp-gateway"]"#,
            "`no-such-program-mcp-gateway` is not an executable file on the server's PATH",
        ),
        (
            r#"command = ["/etc/passwd"]"#,
            "`/etc/passwd` is not an executable file",
        ),
        (r#"command = []"#, "command: is empty"),
        (
            r#"command = ["sh"]
transport = "stdio""#,
            "`stdio` is not supported yet",
        ),
        (
            r#"command = ["sh"]
cgroup = "x"
egress = []"#,
            "runs in a cgroup the gateway makes for it; remove `cgroup`",
        ),
        (
            r#"command = ["sh"]
env = { "A-B" = "1" }"#,
            "`A-B` is not an environment variable name",
        ),
        (
            r#"restart = "always""#,
            "applies to a server the gateway starts: set `command` too",
        ),
        (
            r#"command = ["sh"]
memory_max = "lots""#,
            "memory_max: `lots`: give bytes, or a number with K, M, G or T",
        ),
        (
            r#"command = ["sh"]
pids_max = 0"#,
            "pids_max: 0: give 1 to 4194304 processes",
        ),
        (
            r#"command = ["sh"]
cpu_max = "2""#,
            "cpu_max: `2`: give a share of one CPU from 1% to 10000%",
        ),
        (
            r#"command = ["sh"]
user = "no-such-user-mcp-gateway""#,
            "`no-such-user-mcp-gateway` is not a user of this host",
        ),
        (
            r#"command = ["sh"]
cwd = "/no/such/dir""#,
            "/no/such/dir is not a directory",
        ),
    ] {
        let path = dir.path().join("gateway.toml");
        fs::write(
            &path,
            format!(
                "[[server]]\nname = \"s\"\nlisten = \"127.0.0.1:1\"\nupstream = \"http://127.0.0.1:2/mcp\"\n{table}\n"
            ),
        )
        .unwrap();
        let out = gateway_output(&["run", "--check-config", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table}: accepted");
        assert!(
            err.contains("server `s`") && err.contains(needle),
            "{table}: {err}"
        );
    }
}
