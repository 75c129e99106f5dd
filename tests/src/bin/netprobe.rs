//! Test helper: TCP probes that can put themselves into a cgroup and a network namespace first.
//!
//! `netprobe [--cgroup DIR] [--netns NAME] COMMAND`:
//! - `listen ADDR`: listens on ADDR, prints the bound port, and echoes every connection until
//!   stdin closes.
//! - `connect ADDR [TIMEOUT_MS] [FROM]`: one connect() attempt (from the local address FROM
//!   when given); prints `ok`, `timeout`, or `err ERRNO MESSAGE`. Exits 0 either way (the
//!   answer is the output).
//! - `get ADDR HOST TOKEN FROM`: `GET /mcp` with that Host and bearer token, from FROM;
//!   prints the status code, `timeout` or `err ...`.
//! - `bind ADDR`: one bind(); prints `ok LOCAL_ADDR` or `err ERRNO MESSAGE`.
//! - `sendto ADDR`: one UDP datagram from an unconnected socket; prints `ok` or
//!   `err ERRNO MESSAGE`.
//!
//! The cgroup is joined first (sockets belong to the cgroup of the task that creates them;
//! exclusive-upstream checks the caller's cgroup), then the namespace (`/run/netns/NAME`, as
//! made by `ip netns add`). Joining the namespace directly instead of through `ip netns exec`
//! keeps the host's /sys, where the cgroup-v2 mount lives.
use std::{
    env, fs,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process, thread,
    time::Duration,
};

fn main() {
    let mut args = env::args().skip(1).collect::<Vec<_>>();
    loop {
        match args.as_slice() {
            [flag, dir, ..] if flag == "--cgroup" => {
                // Sockets are charged to the cgroup of the task that creates them.
                fs::write(format!("{dir}/cgroup.procs"), process::id().to_string())
                    .unwrap_or_else(|e| fail(&format!("joining cgroup {dir}: {e}")));
                args.drain(..2);
            }
            [flag, name, ..] if flag == "--netns" => {
                join_netns(name);
                args.drain(..2);
            }
            _ => break,
        }
    }
    match args.as_slice() {
        [cmd, addr] if cmd == "listen" => listen(addr),
        [cmd, addr] if cmd == "connect" => connect(addr, 1000),
        [cmd, addr, ms] if cmd == "connect" => {
            connect(addr, ms.parse().unwrap_or_else(|_| fail("bad timeout")))
        }
        [cmd, addr, ms, from] if cmd == "connect" => {
            let ms = ms.parse().unwrap_or_else(|_| fail("bad timeout"));
            match connect_from(addr, ms, from) {
                Ok(_) => println!("ok"),
                Err(answer) => println!("{answer}"),
            }
        }
        [cmd, addr, host, token, from] if cmd == "get" => get(addr, host, token, from),
        [cmd, addr] if cmd == "bind" => bind(addr),
        [cmd, addr] if cmd == "sendto" => sendto(addr),
        _ => fail(
            "usage: netprobe [--cgroup DIR] [--netns NAME] \
             (listen ADDR | connect ADDR [TIMEOUT_MS] | bind ADDR | sendto ADDR)",
        ),
    }
}

fn join_netns(name: &str) {
    let ns = fs::File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| fail(&format!("opening netns {name}: {e}")));
    // SAFETY: a valid namespace descriptor; this process is single-threaded here.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        fail(&format!(
            "joining netns {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn parse(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|e| fail(&format!("bad address {addr}: {e}")))
}

fn listen(addr: &str) {
    let listener =
        TcpListener::bind(parse(addr)).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("{port}");
    // Exit when the test closes our stdin (or dies).
    thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        process::exit(0);
    });
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn connect(addr: &str, timeout_ms: u64) {
    match TcpStream::connect_timeout(&parse(addr), Duration::from_millis(timeout_ms)) {
        Ok(_) => println!("ok"),
        Err(e) if e.kind() == ErrorKind::TimedOut => println!("timeout"),
        Err(e) => println!("err {} {e}", e.raw_os_error().unwrap_or(0)),
    }
}

fn sendto(addr: &str) {
    let to = parse(addr);
    let from = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sent = std::net::UdpSocket::bind(from).and_then(|s| s.send_to(b"probe", to));
    match sent {
        Ok(_) => println!("ok"),
        Err(e) => println!("err {} {e}", e.raw_os_error().unwrap_or(0)),
    }
}

/// One connect from the local address `from`: the stream, or the one-line answer.
fn connect_from(addr: &str, timeout_ms: u64, from: &str) -> Result<TcpStream, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("err 0 {e}"))?;
        let from: SocketAddr = format!("{from}:0")
            .parse()
            .map_err(|e| format!("err 0 {e}"))?;
        socket
            .bind(from)
            .map_err(|e| format!("err {} {e}", e.raw_os_error().unwrap_or(0)))?;
        let connecting = socket.connect(parse(addr));
        match tokio::time::timeout(Duration::from_millis(timeout_ms), connecting).await {
            Err(_) => Err("timeout".to_owned()),
            Ok(Err(e)) => Err(format!("err {} {e}", e.raw_os_error().unwrap_or(0))),
            Ok(Ok(stream)) => stream.into_std().map_err(|e| format!("err 0 {e}")),
        }
    })
}

fn get(addr: &str, host: &str, token: &str, from: &str) {
    let mut stream = match connect_from(addr, 1000, from) {
        Ok(stream) => stream,
        Err(answer) => {
            println!("{answer}");
            return;
        }
    };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "GET /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        println!("err {} {e}", e.raw_os_error().unwrap_or(0));
        return;
    }
    let mut head = [0u8; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => println!("{}", String::from_utf8_lossy(&head[9..12])),
        Err(e) => println!("err {} {e}", e.raw_os_error().unwrap_or(0)),
    }
}

fn bind(addr: &str) {
    match TcpListener::bind(parse(addr)) {
        Ok(l) => match l.local_addr() {
            Ok(local) => println!("ok {local}"),
            Err(e) => println!("err {} {e}", e.raw_os_error().unwrap_or(0)),
        },
        Err(e) => println!("err {} {e}", e.raw_os_error().unwrap_or(0)),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("netprobe: {msg}");
    process::exit(2)
}
