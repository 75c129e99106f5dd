//! bpffs pin directories owned by one test, emptied and removed on drop.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use gateway_common::Reason;
use mcp_gateway::ebpf::{counters, pins};

/// `/sys/fs/bpf/mcp-gateway-test-<pid>-<n>-<label>`: never the gateway's default pin dir.
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/mcp-gateway-test-{}-{n}-{label}",
            std::process::id()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 pin dir")
    }

    /// Kernel events of `reason` for this address and port, from the pinned counters.
    pub fn count_addr(&self, reason: Reason, addr: IpAddr, port: u16) -> u64 {
        self.sum(|c| c.reason() == Some(reason) && c.addr() == Some(addr) && c.port() == Some(port))
    }

    /// Events of `reason` for this origin label (HTTP rejections, or `addr:port` for kernel
    /// events), from the pinned counters.
    pub fn count_label(&self, reason: Reason, label: &str) -> u64 {
        self.sum(|c| c.reason() == Some(reason) && c.label() == label)
    }

    /// `mcp-gateway status --json` of this pin directory.
    pub fn status_json(&self) -> serde_json::Value {
        let out = crate::process::gateway_output(&["status", "--json", "--pin-dir", self.arg()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    fn sum(&self, filter: impl Fn(&counters::Counter) -> bool) -> u64 {
        counters::from_pin(&self.0)
            .expect("reading the pinned counters")
            .iter()
            .filter(|c| filter(c))
            .map(|c| c.count)
            .sum()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = pins::remove_all(&self.0, false) {
            eprintln!("warning: cleaning pin dir {}: {e}", self.0.display());
        }
    }
}
