//! `scan --config-out FILE`: a gateway configuration for the exposed MCP servers, one
//! `[[server]]` table each on a free loopback port, with `exclusive_upstream` and the kernel
//! layer required. Pure: the caller picks the free ports.
use std::{fmt::Write as _, net::SocketAddr};

use super::{
    probe_target,
    report::{Report, Row},
    verdict::Verdict,
};
use crate::config::MAX_SERVER_NAME;

/// One server of the written configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: String,
    /// Comment lines: where it was found, by which process, why it is exposed.
    pub notes: Vec<String>,
}

/// The rows the configuration protects: exposed MCP servers that are no gateway's upstream
/// (for those the fix is `exclusive_upstream` on that gateway), one per port.
pub fn candidates(report: &Report) -> Vec<&Row> {
    let mut out: Vec<&Row> = Vec::new();
    for row in &report.rows {
        if row.verdict == Verdict::Exposed
            && row.mcp.is_some()
            && row.gateway.is_none()
            && !out.iter().any(|r| r.port == row.port)
        {
            out.push(row);
        }
    }
    out
}

/// A server name from what the server calls itself, made valid and unique with its port.
pub fn server_name(found: Option<&str>, port: u16) -> String {
    let suffix = format!("-{port}");
    let base: String = found
        .unwrap_or("mcp")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(MAX_SERVER_NAME - suffix.len())
        .collect();
    let base = if base.trim_matches('-').is_empty() {
        "mcp".to_owned()
    } else {
        base
    };
    format!("{base}{suffix}")
}

/// The entry for `row`, listening on `listen`.
pub fn entry(row: &Row, listen: SocketAddr) -> Option<Entry> {
    let found = row.mcp.as_ref()?;
    let ip = row.address.parse().ok()?;
    let to = probe_target(ip, row.port, true).ok()?;
    let mut notes = vec![format!("found on {}", socket_text(&row.address, row.port))];
    if let Some(owner) = &row.owner {
        let mut who = format!("process {}: {}", owner.pid, owner.cmdline);
        if let Some(unit) = &owner.unit {
            who.push_str(&format!(" ({unit})"));
        }
        notes.push(who);
    }
    notes.extend(row.reasons.iter().map(|r| format!("exposed: {}", r.text)));
    Some(Entry {
        name: server_name(found.name.as_deref(), row.port),
        listen,
        upstream: format!("http://{to}{}", found.path),
        notes,
    })
}

fn socket_text(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// A TOML string (basic string, escaped).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The configuration file's text.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::from(
        "# Written by `mcp-gateway scan --config-out` for the exposed MCP servers it found.\n\
         # Point each server's clients at its `listen`, then run:\n\
         #   sudo mcp-gateway run --config THIS_FILE\n\
         # exclusive_upstream holds only with the kernel layer, so it is required here: the\n\
         # gateway refuses to start without it rather than run unprotected.\n\
         ebpf = \"required\"\n",
    );
    for e in entries {
        out.push_str("\n[[server]]\n");
        for note in &e.notes {
            // One comment line each: no newline can come through (control characters out).
            let note: String = note.chars().filter(|c| !c.is_control()).collect();
            let _ = writeln!(out, "# {note}");
        }
        let _ = writeln!(out, "name = {}", quoted(&e.name));
        let _ = writeln!(out, "listen = {}", quoted(&e.listen.to_string()));
        let _ = writeln!(out, "upstream = {}", quoted(&e.upstream));
        out.push_str("exclusive_upstream = true\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{identify::Replay, owner::Owner, verdict::test_mcp_facts};

    fn row(ip: &str, port: u16, host: Replay) -> Row {
        let facts = test_mcp_facts(ip, port, host);
        let owner = Owner {
            pid: 9,
            cmdline: "python3 server.py\n[[server]]\nname = \"evil\"".into(),
            unit: Some("w.service".into()),
            ..Owner::default()
        };
        Row::new(facts, Some(owner), 0, vec![])
    }

    #[test]
    fn names_are_valid_server_names() {
        assert_eq!(server_name(Some("weather"), 8000), "weather-8000");
        assert_eq!(server_name(None, 1), "mcp-1");
        assert_eq!(server_name(Some("a b/ü\"]"), 2), "a-b-----2");
        assert_eq!(server_name(Some("///"), 3), "mcp-3");
        let long = server_name(Some(&"x".repeat(100)), 65535);
        assert_eq!(long.len(), MAX_SERVER_NAME);
        assert!(long.ends_with("-65535"));
    }

    #[test]
    fn the_file_is_toml_with_one_table_per_exposed_server() {
        let report = Report::new(
            0,
            std::time::Duration::ZERO,
            std::path::Path::new("/p"),
            None,
            vec![
                row("0.0.0.0", 8000, Replay::Refused { status: 421 }),
                row("::", 8000, Replay::Refused { status: 421 }),
                row("::1", 8001, Replay::Accepted),
                row("127.0.0.1", 8002, Replay::Refused { status: 421 }),
            ],
        );
        let rows = candidates(&report);
        let ports: Vec<u16> = rows.iter().map(|r| r.port).collect();
        assert_eq!(
            ports,
            [8000, 8001],
            "one per port; the protected one left out"
        );
        let entries: Vec<Entry> = rows
            .iter()
            .zip([9000, 9001])
            .map(|(r, p)| entry(r, ([127, 0, 0, 1], p).into()).unwrap())
            .collect();
        let text = render(&entries);
        let doc: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(doc["ebpf"].as_str(), Some("required"));
        let servers = doc["server"].as_array().unwrap();
        assert_eq!(
            servers.len(),
            2,
            "the hostile command line made no table:\n{text}"
        );
        assert_eq!(servers[0]["name"].as_str(), Some("w-8000"));
        assert_eq!(
            servers[0]["upstream"].as_str(),
            Some("http://127.0.0.1:8000/mcp")
        );
        assert_eq!(servers[0]["listen"].as_str(), Some("127.0.0.1:9000"));
        assert_eq!(servers[0]["exclusive_upstream"].as_bool(), Some(true));
        assert_eq!(
            servers[1]["upstream"].as_str(),
            Some("http://[::1]:8001/mcp")
        );
        assert!(text.contains("# found on 0.0.0.0:8000\n"));
        assert!(
            text.contains("# process 9: python3 server.py[[server]]name = \"evil\" (w.service)\n")
        );
        assert!(text.contains("# exposed: binds 0.0.0.0: reachable from other hosts\n"));
        assert!(servers[0].get("evil").is_none());
    }
}
