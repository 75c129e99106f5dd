//! The embedded eBPF object really loads, attaches to a cgroup of the test's own, and runs.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
};

use gateway_common::SkbStat;
use mcp_gateway::ebpf;
use mcp_gateway_tests::{
    cgroup::TestCgroup,
    process::{ChildGuard, netprobe},
    require_privileges,
};

/// Connects to 127.0.0.1:port, sends a message and waits for the echo.
fn echo(port: u16) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"ping").expect("send");
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn ingress_program_counts_packets_reaching_its_cgroup() {
    require_privileges();
    let cgroup = TestCgroup::new("smoke");
    let mut bpf = ebpf::load().expect("load the embedded object");
    let _link = ebpf::attach_ingress(&mut bpf, cgroup.path()).expect("attach to the test cgroup");
    let seen = |bpf: &_| ebpf::skb_stat(bpf, SkbStat::Seen).expect("read SKB_STATS");

    // Control: a socket outside the cgroup (this test process) doesn't move the counter.
    let outside = TcpListener::bind("127.0.0.1:0").expect("bind");
    let outside_port = outside.local_addr().expect("addr").port();
    let echo_once = std::thread::spawn(move || {
        let (mut conn, _) = outside.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
    });
    let before = seen(&bpf);
    echo(outside_port);
    echo_once.join().expect("control server");
    assert_eq!(
        seen(&bpf),
        before,
        "packets to a socket outside the cgroup were counted"
    );

    // A listener inside the cgroup: its SYN, handshake ACK and data all pass the program.
    let mut server = ChildGuard::spawn(
        netprobe()
            .arg("--cgroup")
            .arg(cgroup.path())
            .args(["listen", "127.0.0.1:0"]),
    );
    let port: u16 = server.read_line().parse().expect("port");
    let before = seen(&bpf);
    echo(port);
    let moved = seen(&bpf) - before;
    assert!(
        moved >= 3,
        "expected at least SYN, ACK and data to be counted in the cgroup, counted {moved}"
    );
    drop(server);
}
