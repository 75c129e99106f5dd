//! Shared harness for mcp-gateway's integration tests.
//!
//! Privileged tests are `#[ignore]`d so a plain `cargo test` reports them as skipped;
//! `cargo xtask test` runs them when it has root, CAP_BPF and cgroup v2. A privileged test run
//! without those fails with the reason instead of passing.
pub mod browser;
pub mod cgroup;
pub mod client;
pub mod e2e;
pub mod gateway;
pub mod netns;
pub mod pins;
pub mod pki;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod smuggling;
pub mod tls;
pub mod tools;
pub mod upstream;

use mcp_gateway::ebpf::system;

/// Panics with the reason when this process can't load and attach cgroup eBPF programs (the
/// gateway's own capability check, so tests and `--ebpf required` agree).
pub fn require_privileges() {
    let missing: Vec<&str> = system::missing_caps(true).iter().map(|c| c.name).collect();
    assert!(
        missing.is_empty(),
        "this privileged test cannot run: missing {}. Run it through `sudo -E cargo xtask test`.",
        missing.join(", ")
    );
    assert!(
        system::cgroup2_mount().is_some(),
        "this privileged test cannot run: no cgroup v2 mount in /proc/mounts"
    );
}

/// Polls `done` every 100 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
