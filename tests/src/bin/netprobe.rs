//! Test helper: a TCP echo listener that can put itself into a cgroup first.
//!
//! `netprobe [--cgroup DIR] listen ADDR` joins DIR (so its sockets belong to that cgroup),
//! listens on ADDR, prints the bound port, and echoes every connection until stdin closes.
use std::{
    env, fs,
    io::{Read as _, Write as _},
    net::TcpListener,
    process, thread,
};

fn main() {
    let mut args = env::args().skip(1).collect::<Vec<_>>();
    if args.first().is_some_and(|a| a == "--cgroup") && args.len() > 1 {
        let dir = args.remove(1);
        args.remove(0);
        // Sockets are charged to the cgroup of the task that creates them.
        fs::write(format!("{dir}/cgroup.procs"), process::id().to_string())
            .unwrap_or_else(|e| fail(&format!("joining cgroup {dir}: {e}")));
    }
    match args.as_slice() {
        [cmd, addr] if cmd == "listen" => listen(addr),
        _ => fail("usage: netprobe [--cgroup DIR] listen ADDR"),
    }
}

fn listen(addr: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
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

fn fail(msg: &str) -> ! {
    eprintln!("netprobe: {msg}");
    process::exit(2)
}
