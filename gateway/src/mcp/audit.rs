//! The audit log of MCP calls: one JSON line per MCP message (or per request, when it carries
//! none), written when its answer is complete. It records who called what and what came of it,
//! never arguments, results or credentials' secrets.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde::Serialize;
use serde_json::value::RawValue;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Where `--audit-log` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    Stderr,
    File(std::path::PathBuf),
}

/// Longest `name` kept in a record (a tool, prompt or resource name; cut beyond).
pub const MAX_NAME_CHARS: usize = 256;

/// One line.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
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

/// Most audit writes waiting for the writer thread; past it, lines are dropped and counted
/// (`mcp_gateway_audit_dropped_total`) rather than block a request.
pub const QUEUE_LINES: usize = 16 * 1024;

/// Where the writer thread writes: the file (reopened on request) or stderr.
struct Sink {
    target: AuditTarget,
    file: Option<File>,
    reopen: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
}

impl Sink {
    /// Opens the file again when `AuditLog::reopen` asked for it; keeps the old on failure.
    fn reopen_if_asked(&mut self) {
        if self.reopen.swap(false, Ordering::Relaxed)
            && let AuditTarget::File(path) = &self.target
        {
            match open_file(path) {
                Ok(file) => {
                    self.file = Some(file);
                    tracing::info!(path = %path.display(), "audit log reopened");
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "reopening the audit log failed; still writing to the old file");
                }
            }
        }
    }
}

impl io::Write for Sink {
    /// Runs on the writer thread only: a blocked file or pipe blocks it, never the runtime.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reopen_if_asked();
        if buf.is_empty() {
            return Ok(0);
        }
        let written = match &mut self.file {
            Some(file) => file.write_all(buf),
            None => io::stderr().lock().write_all(buf),
        };
        if let Err(e) = written {
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            if self.failed.fetch_add(lines, Ordering::Relaxed) == 0 {
                tracing::error!(error = %e, target = ?self.target, "AUDIT LOG WRITE FAILED: MCP calls are not being recorded; check the disk and the file's permissions");
            }
        }
        // The worker never sees an error: the lines are counted as failed instead.
        Ok(buf.len())
    }

    /// The writer calls this after each batch, and so after the empty write of a reopen.
    fn flush(&mut self) -> io::Result<()> {
        self.reopen_if_asked();
        // Nothing is buffered here (files are unbuffered); stderr's failures are counted on write.
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// The open audit log: lines go through a bounded queue to one writer thread, so a full disk,
/// a slow one or a pipe nobody reads never holds up a request; what does not fit is dropped and
/// counted.
pub struct AuditLog {
    target: AuditTarget,
    queue: NonBlocking,
    /// Flushes what is queued when the log is dropped (at exit), for at most about a second.
    _writer: WorkerGuard,
    reopen: Arc<AtomicBool>,
    /// Lines that could not be written.
    failed: Arc<AtomicU64>,
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
    /// Opens (creates, appends to) the target, and starts its writer thread.
    pub fn open(target: &AuditTarget) -> io::Result<Self> {
        let file = match target {
            AuditTarget::Stderr => None,
            AuditTarget::File(path) => Some(open_file(path)?),
        };
        let (reopen, failed) = (Arc::default(), Arc::default());
        let sink = Sink {
            target: target.clone(),
            file,
            reopen: Arc::clone(&reopen),
            failed: Arc::clone(&failed),
        };
        let (queue, writer) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("audit-log")
            .finish(sink);
        Ok(Self {
            target: target.clone(),
            queue,
            _writer: writer,
            reopen,
            failed,
        })
    }

    /// Opens the file again (after logrotate moved it: SIGHUP), on the writer thread, which
    /// logs the outcome; the old file stays in use if the new one can't be opened.
    pub fn reopen(&self) {
        if matches!(self.target, AuditTarget::File(_)) {
            self.reopen.store(true, Ordering::Relaxed);
            // An empty write wakes the writer, so an idle log reopens now.
            let _ = self.queue.clone().write(&[]);
        }
    }

    /// Lines that could not be written so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Writes dropped so far because the queue was full (the writer is stuck or too slow).
    pub fn dropped(&self) -> u64 {
        self.queue.error_counter().dropped_lines() as u64
    }

    /// Queues `lines` as one write; never waits.
    pub fn write(&self, lines: &[Line<'_>]) {
        let mut buf = Vec::with_capacity(256 * lines.len());
        for line in lines {
            if serde_json::to_writer(&mut buf, line).is_ok() {
                buf.push(b'\n');
            }
        }
        let before = self.dropped();
        let _ = self.queue.clone().write(&buf);
        if before == 0 && self.dropped() > 0 {
            tracing::error!(target = ?self.target, queue = QUEUE_LINES, "AUDIT LOG LINES DROPPED: the audit log's writer cannot keep up (a full disk, or a pipe nobody reads?); MCP calls are served but not all recorded (mcp_gateway_audit_dropped_total)");
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
        let record = |decision| Line {
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
        let lines = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|text| text.lines().count())
                .unwrap_or(0)
        };
        // The writer thread writes soon after, not before `write` returns.
        let settled = |path: &std::path::Path, want: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while lines(path) < want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        settled(&path, 2);
        // logrotate: move the file away, then SIGHUP.
        let rotated = dir.join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.write(&[record("allowed")]);
        settled(&path, 1);
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        let line: serde_json::Value = serde_json::from_str(old.lines().nth(1).unwrap()).unwrap();
        assert_eq!(line["decision"], "tool");
        assert_eq!(line["id"], 7);
        assert_eq!((log.failed(), log.dropped()), (0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
