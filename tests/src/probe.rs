//! The `netprobe` helper driven from tests: listeners and one-shot connect/bind probes, each in
//! a cgroup and a network namespace of the test's own.
use std::{path::Path, process::Stdio};

use crate::{
    netns::NetnsGuard,
    process::{ChildGuard, netprobe},
};

/// Shorter than the first SYN retransmission (1 s): one attempt is exactly one packet.
pub const ATTEMPT_MS: &str = "400";

/// A listener on `addr` in `cgroup` and `ns`, echoing until the guard drops.
pub fn listen(cgroup: &Path, ns: &NetnsGuard, addr: &str) -> ChildGuard {
    let mut server = ChildGuard::spawn(netprobe().arg("--cgroup").arg(cgroup).args([
        "--netns",
        ns.name(),
        "listen",
        addr,
    ]));
    let port = server.read_line();
    assert!(
        addr.ends_with(&format!(":{port}")),
        "listening on {port}, wanted {addr}"
    );
    server
}

/// One netprobe run (`connect`/`bind`), in `ns` and, if given, `cgroup`; its one-line answer.
pub fn probe(cgroup: Option<&Path>, ns: &NetnsGuard, args: &[&str]) -> String {
    let mut cmd = netprobe();
    if let Some(dir) = cgroup {
        cmd.arg("--cgroup").arg(dir);
    }
    let out = cmd
        .args(["--netns", ns.name()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running netprobe");
    assert!(
        out.status.success(),
        "netprobe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One connect attempt from `ns` to `addr`: `ok`, `timeout` or `err ERRNO ...`.
pub fn connect(ns: &NetnsGuard, addr: &str) -> String {
    probe(None, ns, &["connect", addr, ATTEMPT_MS])
}

/// Whether `bind(0.0.0.0:port)` from inside `cgroup` (in namespace `ns`) is refused with EPERM
/// by the kernel layer.
pub fn bind_refused(cgroup: &crate::cgroup::TestCgroup, ns: &NetnsGuard, port: u16) -> bool {
    probe(
        Some(cgroup.path()),
        ns,
        &["bind", &format!("0.0.0.0:{port}")],
    )
    .starts_with("err 1 ")
}
