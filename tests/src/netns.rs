//! Test-owned network namespaces, removed by an RAII guard even when the test panics.
//!
//! A [`HostPair`] is a "server" namespace and a "remote host" namespace joined by a veth pair,
//! with addresses from the benchmarking ranges 198.18.0.0/15 and 2001:2::/48. No test traffic
//! leaves these namespaces.
use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Server side of the veth pair.
pub const SERVER_V4: &str = "198.18.0.1";
/// Remote host side of the veth pair.
pub const REMOTE_V4: &str = "198.18.0.2";
/// A second address of the remote side: another "host" on the same link.
pub const OTHER_REMOTE_V4: &str = "198.18.0.3";
pub const SERVER_V6: &str = "2001:2::1";
pub const REMOTE_V6: &str = "2001:2::2";

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace made by this test (`ip netns add`), deleted on drop.
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Creates `mcpgw-<pid>-<n>-<label>` with its loopback up.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("mcpgw-{}-{n}-{label}", std::process::id());
        ip(&["netns", "add", &name]);
        let guard = Self { name };
        guard.ip(&["link", "set", "lo", "up"]);
        guard
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete test netns {}", self.name);
        }
    }
}

/// Two namespaces joined by a veth pair (`veth-s` in the server, `veth-r` in the remote).
pub struct HostPair {
    pub server: NetnsGuard,
    pub remote: NetnsGuard,
}

impl HostPair {
    pub fn new(label: &str) -> Self {
        let server = NetnsGuard::new(&format!("{label}-s"));
        let remote = NetnsGuard::new(&format!("{label}-r"));
        // Both ends are created directly inside the namespaces: nothing in the host's.
        ip(&[
            "link",
            "add",
            "veth-s",
            "netns",
            server.name(),
            "type",
            "veth",
            "peer",
            "name",
            "veth-r",
            "netns",
            remote.name(),
        ]);
        for (ns, dev, v4, v6) in [
            (&server, "veth-s", SERVER_V4, SERVER_V6),
            (&remote, "veth-r", REMOTE_V4, REMOTE_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        remote.ip(&[
            "addr",
            "add",
            &format!("{OTHER_REMOTE_V4}/24"),
            "dev",
            "veth-r",
        ]);
        Self { server, remote }
    }
}
