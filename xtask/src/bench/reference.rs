//! The reference proxies the gateway is measured against: each runs the gateway's default
//! Host/Origin rules from a config template in `xtask/bench/`, in front of the same upstream,
//! on the proxy CPUs with as many workers as the gateway.
use std::{path::Path, process::Command};

use crate::cmd;

/// One reference proxy: how to install it, configure it and start it.
pub struct Reference {
    /// Its column in the report.
    pub name: &'static str,
    /// The command, and the Debian package that has it.
    program: &'static str,
    package: &'static str,
    /// Its config, with `{{PORT}}`, `{{UPSTREAM}}`, `{{WORKERS}}` and `{{DIR}}` to fill in.
    template: &'static str,
    /// The template's file, for the report's link.
    pub template_path: &'static str,
    /// Its arguments to run in the foreground, with `{{CONF}}` and `{{DIR}}` to fill in.
    args: &'static [&'static str],
}

/// Every reference, in report order.
pub const REFERENCES: [Reference; 2] = [
    Reference {
        name: "nginx",
        program: "nginx",
        package: "nginx",
        template: include_str!("../../bench/nginx-proxy.conf"),
        template_path: "xtask/bench/nginx-proxy.conf",
        args: &["-p", "{{DIR}}", "-c", "{{CONF}}", "-g", "daemon off;"],
    },
    Reference {
        name: "haproxy",
        program: "haproxy",
        package: "haproxy",
        template: include_str!("../../bench/haproxy-proxy.cfg"),
        template_path: "xtask/bench/haproxy-proxy.cfg",
        args: &["-db", "-f", "{{CONF}}"],
    },
];

impl Reference {
    /// Installs the reference if it is missing (apt, as root); the reason when it can't.
    pub fn ensure(&self) -> Result<(), String> {
        cmd::ensure_apt(&[(self.program, self.package)]).map_err(|e| format!("{e:#}"))
    }

    /// Its config for a proxy on `port` in front of `upstream` (`host:port`).
    pub fn config(&self, port: u16, upstream: &str, workers: usize, dir: &Path) -> String {
        self.template
            .replace("{{PORT}}", &port.to_string())
            .replace("{{UPSTREAM}}", upstream)
            .replace("{{WORKERS}}", &workers.to_string())
            .replace("{{DIR}}", &dir.display().to_string())
    }

    /// Its arguments to run in the foreground with the config at `conf`.
    pub fn args(&self, conf: &Path, dir: &Path) -> Vec<String> {
        self.args
            .iter()
            .map(|a| {
                a.replace("{{CONF}}", &conf.display().to_string())
                    .replace("{{DIR}}", &dir.display().to_string())
            })
            .collect()
    }

    pub fn program(&self) -> &Path {
        Path::new(self.program)
    }

    /// The first line it prints for `-v` (nginx on stderr, HAProxy on stdout).
    pub fn version(&self) -> String {
        Command::new(self.program)
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| format!("{} ?", self.name))
    }
}

/// The references this run measures: each one installed if missing. One that can't be is
/// announced loudly and left out; its reason is returned for the report.
pub fn available() -> (Vec<&'static Reference>, Vec<(&'static str, String)>) {
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    for r in &REFERENCES {
        match r.ensure() {
            Ok(()) => found.push(r),
            Err(why) => {
                eprintln!(
                    "\nxtask: bench: WARNING: {} is not available, its column is SKIPPED: {why}\n",
                    r.name
                );
                skipped.push((r.name, why));
            }
        }
    }
    (found, skipped)
}
