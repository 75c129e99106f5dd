//! The audit log of MCP calls: one JSON line per MCP message (or per request, when it carries
//! none), written when its answer is complete. It records who called what and what came of it,
//! never arguments, results or credentials' secrets.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::AuditTarget;

/// Longest `name` kept in a record (a tool, prompt or resource name; cut beyond).
pub const MAX_NAME_CHARS: usize = 256;

/// One line.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub server: &'a str,
    /// `address:port` of the client.
    pub peer: String,
    /// The request's Origin (sanitised), when it sent one.
    pub origin: Option<&'a str>,
    /// The credential that authenticated the request, when auth is on.
    pub credential: Option<&'a str>,
    /// HTTP method and path (no query: it may carry secrets).
    pub http_method: &'a str,
    pub path: &'a str,
    /// The JSON-RPC method, id and target (tool, resource or prompt), when there is a message.
    pub method: Option<&'a str>,
    pub id: Option<&'a RawValue>,
    pub name: Option<&'a str>,
    pub status: u16,
    /// `allowed`, or why the gateway refused: `host`, `origin`, `fetch_metadata`, `auth`,
    /// `tool`, `method`, `invalid`, `too_large`.
    pub decision: &'a str,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// `now` as `2026-11-21T09:31:00.123Z`.
pub fn timestamp(now: SystemTime) -> String {
    humantime::format_rfc3339_millis(now).to_string()
}

/// `name` cut to [`MAX_NAME_CHARS`] characters.
pub fn cut(name: &str) -> &str {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((at, _)) => &name[..at],
        None => name,
    }
}

enum Sink {
    Stderr,
    File(File),
}

/// The open audit log.
pub struct AuditLog {
    target: AuditTarget,
    sink: Mutex<Sink>,
    /// Lines that could not be written.
    failed: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn open_file(path: &std::path::Path) -> io::Result<File> {
    // Appending: each line is one write, so concurrent writers never interleave within a line.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl AuditLog {
    /// Opens (creates, appends to) the target.
    pub fn open(target: &AuditTarget) -> io::Result<Self> {
        let sink = match target {
            AuditTarget::Stderr => Sink::Stderr,
            AuditTarget::File(path) => Sink::File(open_file(path)?),
        };
        Ok(Self {
            target: target.clone(),
            sink: Mutex::new(sink),
            failed: AtomicU64::new(0),
        })
    }

    /// Opens the file again (after logrotate moved it: SIGHUP). Keeps the old one on failure.
    pub fn reopen(&self) -> io::Result<()> {
        let AuditTarget::File(path) = &self.target else {
            return Ok(());
        };
        let file = open_file(path)?;
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Sink::File(file);
        Ok(())
    }

    /// Lines that could not be written so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Writes `records`, one line each, in one write.
    pub fn write(&self, records: &[Record<'_>]) {
        let mut buf = Vec::with_capacity(256 * records.len());
        for record in records {
            if serde_json::to_writer(&mut buf, record).is_ok() {
                buf.push(b'\n');
            }
        }
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let written = match &mut *sink {
            Sink::Stderr => io::stderr().lock().write_all(&buf),
            Sink::File(file) => file.write_all(&buf),
        };
        drop(sink);
        if let Err(e) = written {
            let n = records.len() as u64;
            if self.failed.fetch_add(n, Ordering::Relaxed) == 0 {
                tracing::error!(error = %e, target = ?self.target, "AUDIT LOG WRITE FAILED: MCP calls are not being recorded; check the disk and the file's permissions");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        // `date -u -d @1795000000` says 2026-11-18T11:06:40.
        assert_eq!(timestamp(t), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn names_are_cut_on_a_char_boundary() {
        assert_eq!(cut("add"), "add");
        let long = "é".repeat(300);
        assert_eq!(cut(&long).chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn lines_are_appended_and_the_file_reopened() {
        let dir = std::env::temp_dir().join(format!("mcp-audit-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&AuditTarget::File(path.clone())).expect("open");
        let id = RawValue::from_string("7".into()).unwrap();
        let record = |decision| Record {
            time: timestamp(SystemTime::now()),
            server: "s",
            peer: "127.0.0.1:5".into(),
            origin: None,
            credential: None,
            http_method: "POST",
            path: "/mcp",
            method: Some("tools/call"),
            id: Some(&id),
            name: Some("add"),
            status: 200,
            decision,
            duration_ms: 1.5,
            bytes_in: 10,
            bytes_out: 20,
        };
        log.write(&[record("allowed"), record("tool")]);
        // logrotate: move the file away, then SIGHUP.
        let rotated = dir.join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().expect("reopen");
        log.write(&[record("allowed")]);
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        let line: serde_json::Value = serde_json::from_str(old.lines().nth(1).unwrap()).unwrap();
        assert_eq!(line["decision"], "tool");
        assert_eq!(line["id"], 7);
        assert_eq!(log.failed(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
