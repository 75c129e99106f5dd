//! The scan's report: the versioned JSON document (`--json`) and the table.
use std::{fmt::Write as _, path::Path, time::Duration};

use serde::Serialize;

use super::{
    identify::{Found, Outcome, Replay},
    owner::Owner,
    verdict::{BindScope, Facts, GatewayOf, Kernel, Reason, Verdict, judge},
};

/// The JSON schema's name and version; a breaking change bumps the number.
pub const SCHEMA: &str = "mcp-gateway-scan/1";

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub gateway_version: &'static str,
    pub started_unix: u64,
    pub duration_ms: u64,
    pub pin_dir: String,
    /// Why the kernel layer's pins could not be read (`null` when they could).
    pub kernel_unreadable: Option<String>,
    pub summary: Summary,
    #[serde(rename = "sockets")]
    pub rows: Vec<Row>,
    /// `--unix`: the listening Unix stream sockets (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_sockets: Option<Vec<super::unix::UnixRow>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub protected: usize,
    pub exposed: usize,
    #[serde(rename = "not-mcp")]
    pub not_mcp: usize,
    pub unknown: usize,
}

/// The rebinding test's two replays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rebinding {
    pub foreign_host: Replay,
    pub foreign_origin: Replay,
}

/// One listening socket.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub address: String,
    pub port: u16,
    pub bind_scope: BindScope,
    pub uid: u32,
    /// `null` when the owning process is not visible (another user's, without root).
    pub owner: Option<Owner>,
    /// What the probes found, in a word: `mcp`, `not-http`, `not-mcp`, `no-answer`,
    /// `closed`, `connect-failed`, `not-probed`.
    pub probe: &'static str,
    /// Every request sent, one line each.
    pub requests: Vec<String>,
    pub mcp: Option<Found>,
    pub rebinding: Option<Rebinding>,
    pub kernel: Kernel,
    pub gateway: Option<GatewayOf>,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

impl Row {
    pub fn new(facts: Facts, owner: Option<Owner>, uid: u32, requests: Vec<String>) -> Self {
        let (verdict, reasons) = judge(&facts);
        let (probe, mcp, rebinding) = match facts.outcome {
            Err(_) => ("not-probed", None, None),
            Ok(Outcome::ConnectFailed(_)) => ("connect-failed", None, None),
            Ok(Outcome::NoAnswer) => ("no-answer", None, None),
            Ok(Outcome::ClosedEmpty) => ("closed", None, None),
            Ok(Outcome::NotHttp) => ("not-http", None, None),
            Ok(Outcome::NotMcp) => ("not-mcp", None, None),
            Ok(Outcome::Mcp {
                found,
                foreign_host,
                foreign_origin,
            }) => (
                "mcp",
                Some(found),
                Some(Rebinding {
                    foreign_host,
                    foreign_origin,
                }),
            ),
        };
        Self {
            address: facts.ip.to_string(),
            port: facts.port,
            bind_scope: facts.scope,
            uid,
            owner,
            probe,
            requests,
            mcp,
            rebinding,
            kernel: facts.kernel,
            gateway: facts.gateway,
            verdict,
            reasons,
        }
    }
}

impl Report {
    pub fn new(
        started_unix: u64,
        took: Duration,
        pin_dir: &Path,
        kernel_unreadable: Option<String>,
        rows: Vec<Row>,
    ) -> Self {
        let mut summary = Summary::default();
        for row in &rows {
            *match row.verdict {
                Verdict::Protected => &mut summary.protected,
                Verdict::Exposed => &mut summary.exposed,
                Verdict::NotMcp => &mut summary.not_mcp,
                Verdict::Unknown => &mut summary.unknown,
            } += 1;
        }
        Self {
            schema: SCHEMA,
            gateway_version: crate::VERSION,
            started_unix,
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            pin_dir: pin_dir.display().to_string(),
            kernel_unreadable,
            summary,
            rows,
            unix_sockets: None,
        }
    }

    /// Adds the `--unix` rows, counted in the summary too.
    pub fn with_unix(mut self, rows: Vec<super::unix::UnixRow>) -> Self {
        for row in &rows {
            *match row.verdict {
                Verdict::Protected => &mut self.summary.protected,
                Verdict::Exposed => &mut self.summary.exposed,
                Verdict::NotMcp => &mut self.summary.not_mcp,
                Verdict::Unknown => &mut self.summary.unknown,
            } += 1;
        }
        self.unix_sockets = Some(rows);
        self
    }
}

fn socket(row: &Row) -> String {
    if row.address.contains(':') {
        format!("[{}]:{}", row.address, row.port)
    } else {
        format!("{}:{}", row.address, row.port)
    }
}

fn process(row: &Row) -> String {
    let Some(owner) = &row.owner else {
        return format!("uid {} (not visible)", row.uid);
    };
    let name = owner
        .exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or("?");
    let mut text = format!("{name} ({})", owner.pid);
    if let Some(unit) = &owner.unit {
        text.push_str(&format!(" {unit}"));
    }
    text
}

fn what(row: &Row) -> String {
    found_text(row.mcp.as_ref(), row.probe)
}

fn found_text(found: Option<&Found>, probe: &str) -> String {
    match found {
        Some(found) => {
            let name = found.name.as_deref().unwrap_or("MCP");
            let version = found
                .version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            let mut text = format!("{name}{version} {} {}", found.transport, found.path);
            if let Some(tools) = &found.tools {
                text.push_str(&format!(" tools: {}", tools.join(", ")));
            }
            text
        }
        None => probe.to_owned(),
    }
}

/// The `--unix` part of the table: one line per socket, then the notes with their fixes.
fn unix_table(out: &mut String, rows: &[super::unix::UnixRow]) {
    let _ = writeln!(
        out,
        "
Unix sockets:"
    );
    let lines: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let process = r.owner.as_ref().map_or_else(
                || "(not visible)".to_owned(),
                |o| {
                    let name = o
                        .exe
                        .as_deref()
                        .and_then(|e| e.rsplit('/').next())
                        .unwrap_or("?");
                    format!("{name} ({})", o.pid)
                },
            );
            [
                r.verdict.name().to_owned(),
                format!("{} {}", r.path, r.mode.as_deref().unwrap_or("")),
                process,
                found_text(r.mcp.as_ref(), r.probe),
            ]
        })
        .collect();
    columns(out, &lines);
    for row in rows.iter().filter(|r| r.verdict != Verdict::NotMcp) {
        notes(out, &row.path, row.verdict, &row.reasons);
    }
}

/// Rows of four cells, the first three padded to their column's widest cell.
fn columns(out: &mut String, lines: &[[String; 4]]) {
    let mut widths = [0usize; 3];
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in lines {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            line[0],
            line[1],
            line[2],
            line[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
}

/// A socket's reasons, each with its fix, under its name and verdict.
fn notes(out: &mut String, name: &str, verdict: Verdict, reasons: &[Reason]) {
    let _ = writeln!(out, "\n{name} {}:", verdict.name());
    for reason in reasons {
        let _ = writeln!(out, "  - {}\n    fix: {}", reason.text, reason.fix);
    }
}

/// The human form: one line per socket, then each reason with its fix.
pub fn table(report: &Report) -> String {
    let lines: Vec<[String; 4]> = report
        .rows
        .iter()
        .map(|r| [r.verdict.name().to_owned(), socket(r), process(r), what(r)])
        .collect();
    let header = ["VERDICT", "SOCKET", "PROCESS", "FOUND"].map(str::to_owned);
    let mut out = String::new();
    columns(
        &mut out,
        &std::iter::once(header).chain(lines).collect::<Vec<_>>(),
    );
    for row in report.rows.iter().filter(|r| !r.reasons.is_empty()) {
        notes(&mut out, &socket(row), row.verdict, &row.reasons);
    }
    if let Some(unix) = report.unix_sockets.as_deref() {
        unix_table(&mut out, unix);
    }
    if let Some(why) = &report.kernel_unreadable {
        let _ = writeln!(out, "\nkernel layer: unknown ({why})");
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} sockets: {} protected, {} exposed, {} not MCP, {} unknown ({} ms)",
        report.rows.len(),
        s.protected,
        s.exposed,
        s.not_mcp,
        s.unknown,
        report.duration_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn sample() -> Report {
        let facts = Facts {
            ip: "0.0.0.0".parse().unwrap(),
            port: 8000,
            scope: BindScope::All,
            outcome: Ok(Outcome::Mcp {
                found: crate::scan::identify::test_found(),
                foreign_host: Replay::Accepted,
                foreign_origin: Replay::Refused { status: 403 },
            }),
            kernel: Kernel::None,
            gateway: None,
        };
        let owner = Owner {
            pid: 7,
            exe: Some("/usr/bin/python3".into()),
            cmdline: "python3 server.py".into(),
            cgroup: Some("/system.slice/w.service".into()),
            unit: Some("w.service".into()),
        };
        let silent = Facts {
            ip: "::1".parse().unwrap(),
            port: 9,
            scope: BindScope::Loopback,
            outcome: Ok(Outcome::NoAnswer),
            kernel: Kernel::None,
            gateway: None,
        };
        Report::new(
            1,
            Duration::from_millis(5),
            Path::new("/sys/fs/bpf/mcp-gateway"),
            None,
            vec![
                Row::new(
                    facts,
                    Some(owner),
                    1000,
                    vec!["POST initialize /mcp".into()],
                ),
                Row::new(silent, None, 0, vec![]),
            ],
        )
    }

    /// The documented schema (docs/scan.md): these keys, these types. A change here is a
    /// change of the schema: bump [`SCHEMA`] when it breaks readers.
    #[test]
    fn the_json_schema_is_stable() {
        let v: Value = serde_json::to_value(sample()).unwrap();
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(v["schema"], "mcp-gateway-scan/1");
        assert_eq!(
            keys(&v),
            [
                "schema",
                "gateway_version",
                "started_unix",
                "duration_ms",
                "pin_dir",
                "kernel_unreadable",
                "summary",
                "sockets"
            ]
        );
        assert_eq!(
            v["summary"],
            json!({"protected": 0, "exposed": 1, "not-mcp": 0, "unknown": 1})
        );
        let s = &v["sockets"][0];
        assert_eq!(
            keys(s),
            [
                "address",
                "port",
                "bind_scope",
                "uid",
                "owner",
                "probe",
                "requests",
                "mcp",
                "rebinding",
                "kernel",
                "gateway",
                "verdict",
                "reasons"
            ]
        );
        assert_eq!(s["bind_scope"], "all");
        assert_eq!(s["verdict"], "exposed");
        assert_eq!(s["probe"], "mcp");
        assert_eq!(
            keys(&s["owner"]),
            ["pid", "exe", "cmdline", "cgroup", "unit"]
        );
        assert_eq!(
            keys(&s["mcp"]),
            [
                "path",
                "era",
                "transport",
                "name",
                "version",
                "protocol_versions",
                "auth_required"
            ]
        );
        assert_eq!(
            s["rebinding"],
            json!({"foreign_host": {"result": "accepted"}, "foreign_origin": {"result": "refused", "status": 403}})
        );
        assert_eq!(s["kernel"], json!({"state": "none"}));
        assert_eq!(keys(&s["reasons"][0]), ["code", "text", "fix"]);
        let silent = &v["sockets"][1];
        assert_eq!(silent["verdict"], "unknown");
        assert_eq!(silent["owner"], Value::Null);
        assert_eq!(silent["mcp"], Value::Null);
        assert_eq!(silent["probe"], "no-answer");
    }

    #[test]
    fn the_table_names_each_socket_and_each_fix() {
        let text = table(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VERDICT  "));
        assert!(lines[1].starts_with("exposed  "));
        assert!(lines[1].contains("0.0.0.0:8000") && lines[1].contains("python3 (7) w.service"));
        assert!(lines[2].starts_with("unknown  ") && lines[2].contains("[::1]:9"));
        assert!(text.contains("\n0.0.0.0:8000 exposed:\n  - binds 0.0.0.0"));
        assert!(text.contains("    fix: bind it to 127.0.0.1:8000"));
        assert!(text.contains("2 sockets: 0 protected, 1 exposed, 0 not MCP, 1 unknown"));
    }
}
