//! Shared harness for mcp-gateway's integration tests.
//!
//! Privileged tests are `#[ignore]`d so a plain `cargo test` reports them as skipped;
//! `cargo xtask test` runs them when it has root, CAP_BPF and cgroup v2. A privileged test run
//! without those fails with the reason instead of passing.
pub mod cgroup;
pub mod client;
pub mod gateway;
pub mod netns;
pub mod process;
pub mod upstream;

use std::fs;

/// Panics with the reason when this process can't load and attach cgroup eBPF programs.
pub fn require_privileges() {
    const CAPS: [(u32, &str); 3] = [
        (39, "CAP_BPF"),
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
    ];
    let status = fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapEff in /proc/self/status");
    let missing: Vec<&str> = CAPS
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "this privileged test cannot run: missing {}. Run it through `sudo -E cargo xtask test`.",
        missing.join(", ")
    );
    assert!(
        cgroup::cgroup2_mount().is_some(),
        "this privileged test cannot run: no cgroup v2 mount in /proc/mounts"
    );
}
