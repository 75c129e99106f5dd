//! `mcp-gateway run --check-config`: what the resolved configuration would run, in words.
use std::fmt::Write as _;

use clap::ValueEnum;

use super::{AuditTarget, ServerSettings, Settings};

/// A setting as it is written on the command line (`strict`, `auto`).
fn value<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(|| "?".to_owned(), |p| p.get_name().to_owned())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn server(out: &mut String, s: &ServerSettings) {
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let _ = writeln!(
        out,
        "server {}: {scheme}://{} -> {} (mode {})",
        s.name,
        s.listen,
        s.upstream,
        value(&s.policy.mode)
    );
    let p = &s.policy;
    let _ = writeln!(
        out,
        "  allowed origins: {}; extra hosts: {}",
        list(&p.allowed_origins),
        list(&p.allowed_hosts)
    );
    if let Some(c) = &s.credentials {
        let names: Vec<String> = c.set.names().map(str::to_owned).collect();
        let _ = writeln!(
            out,
            "  bearer tokens from {}: {}",
            c.path.display(),
            list(&names)
        );
    }
    if let Some(t) = &s.tls {
        let until = t.loaded.cert.not_after.map_or_else(
            || "?".to_owned(),
            |u| humantime::format_rfc3339_seconds(u).to_string(),
        );
        let _ = writeln!(
            out,
            "  TLS certificate for {} (until {until})",
            list(&t.loaded.cert.names)
        );
        if let Some(ca) = &t.files.client_ca {
            let _ = writeln!(
                out,
                "  client certificates from {}, names: {}",
                ca.display(),
                if t.files.client_names.is_empty() {
                    "any".to_owned()
                } else {
                    list(&t.files.client_names)
                }
            );
        }
    }
    if s.plaintext_beyond_loopback {
        let _ = writeln!(out, "  PLAIN HTTP beyond loopback (allow_plaintext)");
    }
    if s.pass_origin {
        let _ = writeln!(
            out,
            "  the browser's Origin reaches the upstream unchanged (pass_origin)"
        );
    }
    if let Some(sup) = &s.supervised {
        let _ = writeln!(
            out,
            "  started by the gateway: {} (restart {}, environment: {})",
            sup.argv.join(" "),
            sup.restart.name(),
            list(&sup.env.keys().cloned().collect::<Vec<_>>())
        );
    }
    if let Some(e) = &s.egress {
        let rules: Vec<String> = e.rules.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  egress of cgroup {}: only {}{}",
            e.cgroup
                .as_ref()
                .map_or_else(|| "(its own)".to_owned(), |c| c.display().to_string()),
            if rules.is_empty() {
                "nothing".to_owned()
            } else {
                rules.join(", ")
            },
            if e.dns {
                " and the resolvers of /etc/resolv.conf on port 53"
            } else {
                ""
            }
        );
    }
    let m = &s.mcp;
    if !(m.allowed_tools.is_empty() && m.denied_tools.is_empty() && m.allowed_methods.is_empty()) {
        let _ = writeln!(
            out,
            "  tools allowed: {}; denied: {}; methods allowed: {}",
            list(&m.allowed_tools),
            list(&m.denied_tools),
            list(&m.allowed_methods)
        );
    }
    if let Some(rate) = s.rate {
        let _ = writeln!(
            out,
            "  rate limit: {}/s per client, burst {}",
            rate.per_second, rate.burst
        );
    }
    if !s.sources.is_empty() {
        let cidrs: Vec<String> = s.sources.cidrs().iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  source allowlist: {}", list(&cidrs));
    }
    if s.exclusive_upstream {
        let _ = writeln!(
            out,
            "  exclusive upstream (kernel): only the gateway connects"
        );
    }
}

/// The summary `--check-config` prints.
pub fn render(settings: &Settings) -> String {
    let mut out = String::new();
    let n = settings.servers.len();
    let _ = writeln!(
        out,
        "configuration OK: {n} server{}",
        if n == 1 { "" } else { "s" }
    );
    for s in &settings.servers {
        server(&mut out, s);
    }
    let k = &settings.kernel;
    let _ = writeln!(
        out,
        "kernel layer: ebpf {}, cgroup {}, pin dir {}",
        value(&k.mode),
        k.cgroup.as_ref().map_or_else(
            || "(the cgroup-v2 root)".to_owned(),
            |c| c.display().to_string()
        ),
        k.pin_dir.display()
    );
    let _ = writeln!(out, "workers: {}", settings.workers);
    let _ = writeln!(
        out,
        "metrics: {}",
        settings
            .metrics
            .listen
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"))
    );
    let audit = match &settings.audit_log {
        None => "off".to_owned(),
        Some(AuditTarget::Stderr) => "stderr".to_owned(),
        Some(AuditTarget::File(path)) => path.display().to_string(),
    };
    let _ = writeln!(out, "audit log: {audit}");
    let scan = settings.scan_interval.map_or_else(
        || "off".to_owned(),
        |every| format!("every {}", humantime::format_duration(every)),
    );
    let _ = writeln!(out, "host scan: {scan}");
    out
}
