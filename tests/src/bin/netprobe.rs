//! Test helper: TCP probes that can put themselves into a cgroup and a network namespace first.
//!
//! `netprobe [--cgroup DIR] [--netns NAME] COMMAND`:
//! - `listen ADDR`: listens on ADDR, prints the bound port, and echoes every connection until
//!   stdin closes.
//! - `connect ADDR [TIMEOUT_MS]`: one connect() attempt; prints `ok`, `timeout`, or
//!   `err ERRNO MESSAGE`. Exits 0 either way (the answer is the output).
//! - `bind ADDR`: one bind(); prints `ok LOCAL_ADDR` or `err ERRNO MESSAGE`.
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
        [cmd, addr] if cmd == "bind" => bind(addr),
        _ => fail(
            "usage: netprobe [--cgroup DIR] [--netns NAME] \
             (listen ADDR | connect ADDR [TIMEOUT_MS] | bind ADDR)",
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
