//! The real `mcp-gateway` binary: start-up, configuration layering and errors, shutdown.
//!
//! Every `run` here passes `--ebpf off`: these tests are about userspace, and must never attach
//! anything to the host's root cgroup.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use mcp_gateway_tests::process::gateway_command;

fn gateway(args: &[&str]) -> Command {
    let mut cmd = gateway_command();
    cmd.args(args);
    cmd
}

/// `run` with the kernel layer and the metrics listener off, plus `args`.
fn run_cmd(args: &[&str]) -> Command {
    // No metrics listener either: the default port would collide between concurrent tests.
    let mut cmd = gateway(&["run", "--ebpf", "off", "--metrics-listen", "off"]);
    cmd.args(args);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run mcp-gateway")
}

/// Sends SIGTERM and waits (up to 10 s) for the child to exit.
fn terminate(child: &mut Child) -> ExitStatus {
    // SAFETY: plain kill(2) on our own child.
    let sent = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    assert_eq!(sent, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-gateway-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
    path
}

#[test]
fn help_lists_the_subcommands() {
    let out = output(&mut gateway(&["--help"]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "check"] {
        assert!(text.contains(sub), "{sub} missing from --help:\n{text}");
    }
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let unknown = temp_file(
        "unknown.toml",
        "upstream = \"http://127.0.0.1:9/mcp\"\nalowed_origins = []\n",
    );
    let bad_origin = temp_file(
        "origin.toml",
        "upstream = \"http://127.0.0.1:9/mcp\"\nallowed_origins = [\"http://x.test/path\"]\n",
    );
    let wildcard = temp_file(
        "host.toml",
        "upstream = \"http://127.0.0.1:9/mcp\"\nallowed_hosts = [\"*.example.com\"]\n",
    );
    let unknown = unknown.to_str().unwrap();
    let bad_origin = bad_origin.to_str().unwrap();
    let wildcard = wildcard.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 7] = [
        (vec!["--config", unknown], "alowed_origins"),
        (vec!["--config", bad_origin], "allowed_origins"),
        (vec!["--config", wildcard], "allowed_hosts"),
        (vec![], "upstream"),
        (vec!["--upstream", "https://127.0.0.1:9/mcp"], "upstream"),
        (
            vec![
                "--upstream",
                "http://127.0.0.1:9/mcp",
                "--listen",
                "0.0.0.0:0",
            ],
            "loopback",
        ),
        (
            vec![
                "--upstream",
                "http://127.0.0.1:9/mcp",
                "--max-body-bytes",
                "0",
            ],
            "max_body_bytes",
        ),
    ];
    for (args, key) in cases {
        let out = output(&mut run_cmd(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            stderr.contains(key),
            "{args:?}: error should name {key}:\n{stderr}"
        );
    }
}

#[test]
fn malformed_rates_and_source_ranges_fail_at_start_naming_the_key() {
    let up = "http://127.0.0.1:9/mcp";
    let cases: [(&[&str], &str); 8] = [
        (&["--rate-limit", "20"], "rate_limit: `20` is not a rate"),
        (
            &["--rate-limit", "20/hour"],
            "rate_limit: `20/hour` is not a rate",
        ),
        (&["--rate-limit", "0/s"], "rate_limit: `0/s` is not a rate"),
        (&["--rate-burst", "5"], "rate_burst: needs rate_limit"),
        (
            &["--rate-limit", "5/s", "--rate-burst", "0"],
            "rate_burst: must be at least 1",
        ),
        (
            &["--allow-source", "10.0.0.0/33"],
            "allow_sources: `10.0.0.0/33`: the prefix length must be 0 to 32",
        ),
        (
            &["--allow-source", "10.0.0.1/8"],
            "allow_sources: `10.0.0.1/8` has host bits set; did you mean 10.0.0.0/8?",
        ),
        (
            &["--allow-source", "192.0.2.0/24", "--allow-source", "lan"],
            "allow_sources: `lan`: `lan` is not an IPv4 or IPv6 address",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["--upstream", up];
        all.extend_from_slice(args);
        let out = output(&mut run_cmd(&all));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            stderr.contains(want),
            "{args:?}: should say {want}:\n{stderr}"
        );
    }

    // The same keys in a [[server]] table name the server too.
    let file = temp_file(
        "rate.toml",
        &format!(
            "{}rate_limit = \"fast\"\n",
            server_table("db", "127.0.0.1:18787", up)
        ),
    );
    let out = output(&mut run_cmd(&["--config", file.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server `db` ([[server]] table 1): rate_limit: `fast` is not a rate"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_credentials_file_fails_at_start_naming_the_line_never_the_token() {
    let cases = [
        (
            "ci s3cret-one\nci s3cret-two\n",
            "line 2: the name `ci` is also on line 1",
        ),
        (
            "ci s3cret-one\nbob s3cret-one\n",
            "line 2: the same token as line 1",
        ),
        ("ci s3cret-one extra\n", "line 1: write `NAME TOKEN`"),
        ("# nothing but a comment\n", "holds no credential"),
    ];
    for (text, want) in cases {
        let file = temp_file("tokens", text);
        let out = output(&mut run_cmd(&[
            "--upstream",
            "http://127.0.0.1:9/mcp",
            "--auth-token-file",
            file.to_str().unwrap(),
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} started");
        assert!(
            stderr.contains("auth_token_file: ") && stderr.contains(want),
            "{text:?}: should say {want}:\n{stderr}"
        );
        assert!(!stderr.contains("s3cret"), "a token in the error: {stderr}");
    }
}

/// A `[[server]]` table.
fn server_table(name: &str, listen: &str, upstream: &str) -> String {
    format!("[[server]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n")
}

#[test]
fn bad_server_tables_fail_at_start_naming_the_server_and_the_key() {
    let a = server_table("a", "127.0.0.1:18787", "http://127.0.0.1:8000/mcp");
    let cases = [
        (
            "same-listen",
            format!(
                "{a}{}",
                server_table("b", "127.0.0.1:18787", "http://127.0.0.1:8001/mcp")
            ),
            "server `b` ([[server]] table 2): listen: 127.0.0.1:18787 is also the listen address of server `a`; give each server its own address",
        ),
        (
            "same-name",
            format!(
                "{a}{}",
                server_table("a", "127.0.0.1:18788", "http://127.0.0.1:8001/mcp")
            ),
            "server `a` ([[server]] table 2): name: `a` also names [[server]] table 1; give each server its own name",
        ),
        (
            "unknown-key",
            format!("{a}allowed_origin = [\"http://x.test\"]\n"),
            "unknown field `allowed_origin`, expected one of",
        ),
        (
            "no-upstream",
            "[[server]]\nname = \"a\"\nlisten = \"127.0.0.1:18787\"\n".to_owned(),
            "server `a` ([[server]] table 1): upstream: missing; add upstream = \"http://127.0.0.1:8000/mcp\"",
        ),
        (
            "relative-unix",
            server_table("a", "127.0.0.1:18787", "unix:run/mcp/a.sock"),
            "server `a` ([[server]] table 1): upstream: `unix:run/mcp/a.sock` is not usable: the socket path must be absolute",
        ),
        (
            "bad-name",
            server_table("a b", "127.0.0.1:18787", "http://127.0.0.1:8000/mcp"),
            "name: `a b`: use 1 to 32 letters",
        ),
        (
            "top-level-upstream",
            format!("upstream = \"http://127.0.0.1:9/mcp\"\n{a}"),
            "upstream: the config file has [[server]] tables: set it in each table",
        ),
        (
            "exclusive-unix",
            format!(
                "{}exclusive_upstream = true\n",
                server_table("a", "127.0.0.1:18787", "unix:/run/a.sock")
            ),
            "exclusive_upstream: server `a` has a Unix-socket upstream",
        ),
    ];
    for (name, text, want) in cases {
        let file = temp_file(&format!("{name}.toml"), &text);
        let out = output(&mut run_cmd(&["--config", file.to_str().unwrap()]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} started");
        assert_eq!(
            stderr.matches(want).count(),
            1,
            "{name}: the error should say, once: {want}\n{stderr}"
        );
    }
}

#[test]
fn non_loopback_listen_needs_the_flag_authentication_and_tls() {
    let token = temp_file("token", "s3cret\n");
    let token = token.to_str().unwrap();
    let base = [
        "--upstream",
        "http://127.0.0.1:9/mcp",
        "--listen",
        "0.0.0.0:0",
    ];
    let flag = ["--allow-non-loopback"];
    let auth = ["--auth-token-file", token];
    let cases: [(Vec<&str>, &[&str]); 4] = [
        (
            vec![],
            &["--allow-non-loopback, authentication", "TLS (--tls-cert"],
        ),
        (
            flag.to_vec(),
            &["add authentication (--auth-token-file", "TLS"],
        ),
        (auth.to_vec(), &["add --allow-non-loopback, TLS"]),
        (
            [&flag[..], &auth[..]].concat(),
            &["add TLS (--tls-cert FILE --tls-key FILE; or --allow-plaintext"],
        ),
    ];
    for (extra, wants) in cases {
        let out = output(run_cmd(&base).args(&extra));
        assert!(!out.status.success(), "{extra:?} was enough");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("0.0.0.0:0 is not a loopback address"),
            "{extra:?}: {stderr}"
        );
        for want in wants {
            assert!(
                stderr.contains(want),
                "{extra:?} should say {want}: {stderr}"
            );
        }
        assert!(!stderr.contains("s3cret"), "token leaked into the error");
    }

    // All three (plain HTTP explicitly) start, and say loudly that it is plain HTTP.
    let mut child = run_cmd(&base)
        .args(flag)
        .args(auth)
        .arg("--allow-plaintext")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("PLAIN HTTP") || l.contains("error"))
        .unwrap_or_default();
    let _ = terminate(&mut child);
    assert!(
        line.contains("PLAIN HTTP ON A NON-LOOPBACK ADDRESS"),
        "{line}"
    );
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file = temp_file(
        "layers.toml",
        &format!("upstream = \"http://127.0.0.1:9/mcp\"\nlisten = \"127.0.0.1:{file_port}\"\n"),
    );
    let file = file.to_str().unwrap();
    let env_listen = format!("127.0.0.1:{env_port}");
    let flag_listen = format!("127.0.0.1:{flag_port}");
    let cases = [
        (
            Some(flag_listen.as_str()),
            Some(env_listen.as_str()),
            flag_port,
        ),
        (None, Some(env_listen.as_str()), env_port),
        (None, None, file_port),
    ];
    for (flag, env, want) in cases {
        let mut cmd = run_cmd(&["--config", file]);
        if let Some(flag) = flag {
            cmd.args(["--listen", flag]);
        }
        if let Some(env) = env {
            cmd.env("MCP_GATEWAY_LISTEN", env);
        }
        let mut child = cmd.stderr(Stdio::null()).spawn().unwrap();
        let up = wait_listening(SocketAddr::from(([127, 0, 0, 1], want)));
        let _ = child.kill();
        let _ = child.wait();
        assert!(up, "flag={flag:?} env={env:?}: not listening on {want}");
    }
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = run_cmd(&["--upstream", "http://127.0.0.1:9/mcp", "--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_listening(listen.parse().unwrap()));
    let status = terminate(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn a_closed_stderr_does_not_stop_the_gateway() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = run_cmd(&["--upstream", "http://127.0.0.1:9/mcp", "--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log reader goes away at once, as a log pipe whose reader died would.
    drop(child.stderr.take());
    assert!(
        wait_listening(listen.parse().unwrap()),
        "the gateway died writing its start-up logs to a closed stderr"
    );
    // A rejection is logged (to the closed pipe) and still answered.
    let mut conn = TcpStream::connect(&listen).unwrap();
    conn.write_all(b"POST /mcp HTTP/1.1\r\nHost: rebind.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let status = terminate(&mut child);
    assert!(status.success(), "exit {status}");
}
